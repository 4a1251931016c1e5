"""vlbridge.models"""
