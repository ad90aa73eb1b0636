"""Region-aware attention: the one mechanism LoRA-Composer and Mix-of-Show share.

Inside each box, cross-attention reads that region's own keys and values (its prompt, encoded for
its concept); outside the boxes, the global prompt's; where boxes overlap, the region outputs are
averaged. Optionally, self-attention is masked so that a box's queries do not read other boxes.

- :mod:`regions.geometry`: boxes on every attention grid (cells, overlap shares, the query groups of the
  self-attention mask, boxes that round to no cell);
- :mod:`regions.controller`: what the processors of one UNet forward share (mode, caches, stored maps);
- :mod:`regions.processors`: the self- and cross-attention processors (fused attention per query group,
  region attention batched across regions);
- :mod:`regions.sources`: where region keys/values come from: base weights plus each concept's
  low-rank delta (LoRA-Composer), or a fused model's own weights (Mix-of-Show);
- :mod:`regions.adapters`: T2I-Adapter conditions weighted per box;
- :mod:`regions.sampler`: the CFG sampling loop with region injection, an explicit "adapter steps"
  setting and an optional guidance (LoRA-Composer adds its losses and re-initialization there).
"""
