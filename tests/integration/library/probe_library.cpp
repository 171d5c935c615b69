// A shared library of which the tests build two versions at one soname:
// library_probe runs with the first, and a test host may hold the second at
// its path. The version is compiled in, so the code that runs tells which
// file was mapped.
extern "C" int rfork_probe_library_version() { return RFORK_PROBE_LIBRARY_VERSION; }
