"""The learning benchmark: does a package's recommended recipe beat doing nothing on images it never
trained on? See ``docs/learning.md``."""
