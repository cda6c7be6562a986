"""Built-in attacks, one file each; registered through the ``bench.attacks`` entry points."""
