"""plasticity_dynamics.data"""
