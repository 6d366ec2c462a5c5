"""Data: decoding (PyAV), the HDF5 store, dataset layouts, the clip reader, the demo set."""
