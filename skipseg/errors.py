"""The one exception type users see: its message names the file or key and what is wrong."""


class SkipsegError(Exception):
    """A problem with the user's input (file, key, value), reported as one line with exit code 2."""


class UnsafeFileError(SkipsegError):
    """A file refused because reading it would run code from it (a crafted pickle): never just a note."""
