"""fabformer.rtl"""
