"""fabformer.sim"""
