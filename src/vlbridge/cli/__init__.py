"""vlbridge.cli"""
