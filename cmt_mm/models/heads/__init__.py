from .cmt_cls_head import CMTClsHead

__all__ = ['CMTClsHead']
