"""hps workers: lease a trial over HTTP, train it with PyTorch, report back, repeat.

Importing this package imports no torch; ``worker.loop`` and the training modules do.
"""
