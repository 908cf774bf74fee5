"""fabformer.hls"""
