"""plasticity_dynamics.plotting"""
