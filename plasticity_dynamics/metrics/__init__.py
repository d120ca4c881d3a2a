"""plasticity_dynamics.metrics"""
