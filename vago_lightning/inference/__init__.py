"""After training: `export` to the XTTS-v2 release layout, speech (`synthesis`), and `compare`."""
