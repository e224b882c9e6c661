"""Synetgy (thesis ch. 7): shift-based DiracDelta models, w4a4 fake quantization and an
integer emulator of the Ultra96 FPGA accelerator with a calibrated latency / energy model.

shift.py     shift, circular channel shuffle, kernel = stride max-pool, up-sampling, sum pool
quant.py     QConv (1x1 + BN + PACT ActQuant, DoReFa weights), shared scale, progressive schedule
models.py    DiracDeltaNet (ImageNet, Table 7.10) and DiracDeltaSeg (LiDAR, registered)
compiler.py  torch.fx -> integer program (weights, ActQuant threshold tables, placement)
hardware.py  cycle / DRAM / CPU / power model, Table 7.14 calibration
emulator.py  integer execution + timing (the `synetgy` inference backend over it is
             backends/synetgy.py; backend.py re-exports it under its old name)
(the calibration report, offline: python -m squeeze_perception.offline.accelerator_report)
"""
