"""vlbridge.connectors"""
