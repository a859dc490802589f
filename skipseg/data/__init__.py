"""Datasets (VOC, SBD, any VOC-layout folder, the generated shapes), transforms and label I/O."""
