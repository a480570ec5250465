"""The command-line applications: ``wsslib reproduce``, ``annotate``, ``bench``."""
