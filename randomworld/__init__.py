"""The random-weight world: SD1.5-layout models built from configs with fixed seeds, and generated assets.

Everything here is random: images made with it are noise and scores carry no signal (every table
marks such rows). It exists so that every code path (layer-wise ED-LoRAs in every file spelling,
T2I-Adapter conditions, a background concept, two base models, CLIP/DINO scoring) runs in seconds,
offline, in tests and smoke runs. Registered as a plugin (``randomworld.plugin``).
"""
