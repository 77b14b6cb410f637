"""First-party encoder plugins, imported as ``embench_plugins``; each is loaded through the
``embench`` entry-point group exactly like a third-party plugin."""
