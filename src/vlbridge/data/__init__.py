"""vlbridge.data"""
