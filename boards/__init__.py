"""fabformer.boards"""
