"""plasticity_dynamics.tasks"""
