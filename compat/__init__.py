"""Reading programs saved by other frameworks into lmforge programs and artifacts."""
