"""The node kinds of the integer graph, one module each; importing a module registers its op.

:func:`hwbed.ir.opdef.load_ops` imports every module here. A new node kind is a module here
registering its :class:`~hwbed.ir.opdef.OpDef` (shared checks in :mod:`hwbed.ir.opkit`), a
case in ``tests/ir/test_ops.py``, and one entry per backend table (``tests/ir/test_op_backends.py``
names a backend that lacks one).
"""
