"""plasticity_dynamics.models"""
