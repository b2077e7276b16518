"""The command line: argument parsing and output only; all behaviour lives in the library."""
