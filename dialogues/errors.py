"""The two kinds of failure a user is told about: their input, or a service.

Every error class of the project derives from one of them (a test walks the sources), so the
command line classifies a failure by kind (`cli.errors.classify`) and a new error class needs no
listing anywhere: bad input exits 2, a failed service 1, each with its message as one line. The
classes keep their other base (`ValueError`, `RuntimeError`, `LookupError`), so code that
catches those still catches them.
"""

from __future__ import annotations


class InputError(Exception):
    """The user's input is wrong: a file, a flag, a setting, a name. The CLI exits 2.

    The message is one line that says what is wrong and where (a path, a setting's name).
    """


class ServiceError(Exception):
    """A service or the runtime failed (a model server, Chroma, the embedding model). Exit 1.

    Also the runtime: a training run that cannot run or finish here.

    The message is one line that says which service and why.
    """
