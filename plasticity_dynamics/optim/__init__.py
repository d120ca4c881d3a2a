"""plasticity_dynamics.optim"""
