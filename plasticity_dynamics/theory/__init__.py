"""plasticity_dynamics.theory"""
