# testing.pyx defines no C API of its own: its hooks are Python functions over the core's.
