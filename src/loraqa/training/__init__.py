"""Training: tracking and callbacks < the Trainer subclass and its wiring < train (one run into a run directory)."""
