from .layer_decay import LayerDecayOptimWrapperConstructor
from .merged_groups import MergedGroupsOptimWrapperConstructor, merge_param_groups

__all__ = [
    'LayerDecayOptimWrapperConstructor', 'MergedGroupsOptimWrapperConstructor',
    'merge_param_groups'
]
