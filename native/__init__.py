"""The native (Cython) datapath. Import it only through sfu.io.datapath, which loads
the libsrtp it links against first."""
