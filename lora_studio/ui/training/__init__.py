"""Training: settings form, the worker that runs engine.train, live plots and readouts."""
