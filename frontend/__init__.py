"""fabformer.frontend"""
