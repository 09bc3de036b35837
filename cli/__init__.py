"""The ``lmforge`` command line. It sits above every other package and may use them all."""
