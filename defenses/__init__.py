"""Built-in defenses, one file each; registered through the ``bench.defenses`` entry points."""
