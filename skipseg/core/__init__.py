"""What every layer above shares: the device runtime (precision, memory format, distributed), the
run folder's layout (`RunDir`), checkpoint files (atomic writes, safe loading) and data loaders."""
