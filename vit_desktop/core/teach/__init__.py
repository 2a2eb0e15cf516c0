"""Teach a classifier your own classes from folders of examples.

:func:`.train.train` (the window's File › New Classifier… and ``vit-desktop train``) lists
the folder (:mod:`.dataset`), runs the frozen backbone once per image with a cache
(:mod:`.features`), trains and scores a head (:mod:`.heads`) and returns a
:class:`.families.taught.TaughtViT`; :mod:`.saved` writes and opens its file, which
:func:`..loading.load_model` opens like any model.
"""
