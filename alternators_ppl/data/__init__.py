"""Data: simulators (Lorenz-63, Poisson neurons), forecasting/decoding tasks and scaling."""
