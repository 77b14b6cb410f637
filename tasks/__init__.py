"""First-party task plugins, imported as ``embench_tasks``; loaded through the ``embench``
entry-point group exactly like third-party plugins."""
