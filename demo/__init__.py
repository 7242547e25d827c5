"""tbprobe's demo: two training runs of a small CNN that differ in one setting."""
