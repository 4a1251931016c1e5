"""vlbridge.train"""
