"""asv benchmark suite (see asv.conf.json)."""
