"""vlbridge.eval"""
