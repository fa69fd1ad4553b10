"""cmt_mm.SafeLoadImageFromFile reads every kind of image file as the upright 3-channel uint8 BGR
image, skips (training) or blacks out (evaluation) a file that cannot be read with a warning that
names it, and the shipped classification pipelines turn any image size into the model's input.
"""
import io
import os.path as osp
from pathlib import Path

import cv2
import mmcv
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from cmt_mm.datasets import SafeLoadImageFromFile

REPO = Path(__file__).resolve().parents[2]
EXIF_ORIENTATION = 0x0112


def rgb_image(height=40, width=60, seed=0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # a red corner shows the orientation
    return rgb


def save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='JPEG', quality=95)
    return buffer.getvalue()


def load(path, **kwargs):
    return SafeLoadImageFromFile(**kwargs)(dict(img_path=str(path)))


def assert_bgr_uint8(results, rgb: np.ndarray):
    img = results['img']
    assert img.dtype == np.uint8 and img.shape == rgb.shape
    assert np.array_equal(img, rgb[..., ::-1])
    assert results['img_shape'] == results['ori_shape'] == rgb.shape[:2]


def test_rgb_png_is_bgr(tmp_path):
    rgb = rgb_image()
    assert_bgr_uint8(load(save(Image.fromarray(rgb), tmp_path / 'rgb.png')), rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = rgb_image()[..., 1]
    results = load(save(Image.fromarray(gray), tmp_path / 'gray.png'))
    assert_bgr_uint8(results, np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P', '1', 'CMYK'])
def test_other_modes_become_what_mmcv_default_loading_gives(mode, tmp_path):
    """Alpha is dropped (as OpenCV does); palettes, bit maps and CMYK become colours."""
    image = Image.fromarray(rgb_image()).convert(mode)
    if mode in ('RGBA', 'LA'):
        image.putalpha(7)  # nearly transparent: the colours come through all the same
    fmt = 'JPEG' if mode == 'CMYK' else 'PNG'
    path = save(image, tmp_path / f'{mode}.{fmt.lower()}', format=fmt)
    img = load(path)['img']
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8
    # Pillow and OpenCV invert CMYK with different rounding.
    assert np.abs(img.astype(int) - mmcv.imread(path)).max() <= (1 if mode == 'CMYK' else 0)


def test_16_bit_grayscale_keeps_its_top_byte(tmp_path):
    """Pillow's own conversion and mmcv's pillow backend saturate 16-bit values to white."""
    gray = rgb_image()[..., 0]
    deep = gray.astype(np.uint16) * 256 + gray // 3  # v -> 16-bit v * 256 + low bits
    path = save(Image.fromarray(deep), tmp_path / 'deep.png')
    assert Image.open(path).mode.startswith('I;16')
    assert_bgr_uint8(load(path), np.repeat(gray[..., None], 3, axis=2))


def test_16_bit_rgb_keeps_its_top_byte(tmp_path):
    rgb = rgb_image()
    path = str(tmp_path / 'deep_rgb.png')
    cv2.imwrite(path, (rgb.astype(np.uint16) * 257)[..., ::-1])  # Pillow cannot write it
    assert_bgr_uint8(load(path), rgb)


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_exif_orientation_gives_the_upright_image(orientation, fmt, tmp_path):
    """The image mmcv's default loading (OpenCV) returns, for every EXIF orientation."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = save(Image.fromarray(rgb_image()), tmp_path / f'exif{orientation}.{fmt.lower()}',
                format=fmt, exif=exif.tobytes())
    expected = mmcv.imread(path)  # cv2, flag 'color': applies the orientation
    img = load(path)['img']
    assert img.shape == expected.shape
    assert np.abs(img.astype(int) - expected).max() <= 1  # identical decoders; JPEG rounding
    if orientation == 6:  # turned 90 degrees clockwise: the red corner goes top-right
        assert img.shape[:2] == (60, 40)
        assert np.abs(img[2, -2].astype(int) - (0, 0, 255)).max() < 10  # BGR red


@pytest.mark.parametrize('size', [(20, 20), (40, 1280), (45, 70), (1, 1)])
def test_any_size_is_kept(size, tmp_path):
    """Up to 32 times as long as wide; longer ones are padded (test_thin_images.py)."""
    rgb = rgb_image(*size)
    assert_bgr_uint8(load(save(Image.fromarray(rgb), tmp_path / 'sized.png')), rgb)


def test_jpeg_matches_mmcv_default_loading(tmp_path):
    path = tmp_path / 'photo.jpg'
    path.write_bytes(jpeg_bytes(rgb_image(120, 90)))
    assert np.array_equal(load(path)['img'], mmcv.imread(str(path)))


def unreadable_files(folder: Path) -> dict:
    data = jpeg_bytes(rgb_image())
    png = io.BytesIO()
    Image.fromarray(rgb_image()).save(png, format='PNG')
    files = {
        'truncated.jpg': data[:len(data) // 2],
        'header_only.jpg': data[:200],
        'truncated.png': png.getvalue()[:len(png.getvalue()) // 2],
        'empty.jpg': b'',
        'not_an_image.jpg': b'<html>404</html>',
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in [*files, 'missing.jpg']}


def test_unreadable_files_are_skipped_with_a_warning_naming_them(tmp_path, logged_warnings):
    for name, path in unreadable_files(tmp_path).items():
        logged_warnings.clear()
        assert load(path) is None, name
        assert len(logged_warnings) == 1 and str(path) in logged_warnings[0], logged_warnings
        assert 'skipped' in logged_warnings[0]


def test_truncated_jpeg_fails_mmcv_default_loading(tmp_path):
    """What the transform replaces: one truncated file ends a run."""
    from mmcv.transforms import LoadImageFromFile
    path = unreadable_files(tmp_path)['truncated.jpg']
    with pytest.raises(AssertionError, match='failed to load image'):
        LoadImageFromFile(ignore_empty=True)(dict(img_path=str(path)))


def test_evaluation_scores_an_unreadable_file_as_a_black_image(tmp_path, logged_warnings):
    path = unreadable_files(tmp_path)['truncated.jpg']
    transform = SafeLoadImageFromFile(on_error='black')
    results = transform(dict(img_path=str(path), height=40, width=60))
    assert results['img'].shape == (40, 60, 3) and not results['img'].any()
    assert results['ori_shape'] == (40, 60)
    assert len(logged_warnings) == 1 and str(path) in logged_warnings[0]
    assert 'black image' in logged_warnings[0]
    # Without a recorded size (classification): any size does, the pipeline resizes it.
    assert transform(dict(img_path=str(path)))['img'].shape == (1, 1, 3)


def test_to_float32(tmp_path):
    path = save(Image.fromarray(rgb_image()), tmp_path / 'rgb.png')
    assert load(path, to_float32=True)['img'].dtype == np.float32


def test_cache_serves_decoded_images_without_reading_the_file_again(tmp_path):
    rgb = rgb_image()
    path = Path(save(Image.fromarray(rgb), tmp_path / 'rgb.png'))
    transform = SafeLoadImageFromFile(cache_max_bytes=rgb.nbytes)
    first = transform(dict(img_path=str(path)))
    first['img'][:] = 0  # what a later in-place transform does must not reach the cache
    path.unlink()
    assert_bgr_uint8(transform(dict(img_path=str(path))), rgb)


def test_full_cache_warns_once_and_decodes_other_images_each_time(tmp_path, logged_warnings):
    rgb = rgb_image()
    paths = [Path(save(Image.fromarray(rgb), tmp_path / f'{i}.png')) for i in range(3)]
    transform = SafeLoadImageFromFile(cache_max_bytes=rgb.nbytes)
    for path in paths:
        assert_bgr_uint8(transform(dict(img_path=str(path))), rgb)
    assert len(logged_warnings) == 1 and 'cache is full at 1 images' in logged_warnings[0]
    for path in paths:
        path.unlink()
    assert_bgr_uint8(transform(dict(img_path=str(paths[0]))), rgb)
    assert transform(dict(img_path=str(paths[1]))) is None  # not cached: read, and missing
    assert len(logged_warnings) == 2 and 'cannot read' in logged_warnings[1]


@pytest.mark.parametrize('cache_max_bytes', [-1, 1.5, '1G'])
def test_cache_size_must_be_whole_bytes(cache_max_bytes):
    with pytest.raises(ValueError, match='cache_max_bytes must be a whole number of bytes'):
        SafeLoadImageFromFile(cache_max_bytes=cache_max_bytes)


@pytest.mark.parametrize('scope', ['mmdet', 'mmpretrain'])
def test_builds_by_its_scoped_name(scope):
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import TRANSFORMS
    else:
        from mmpretrain.registry import TRANSFORMS
    transform = TRANSFORMS.build(dict(type='cmt_mm.SafeLoadImageFromFile', on_error='black'))
    assert isinstance(transform, SafeLoadImageFromFile) and transform.on_error == 'black'
    with pytest.raises(ValueError, match='on_error'):
        SafeLoadImageFromFile(on_error='ignore')


def test_training_dataset_loads_another_sample_instead(tmp_path, logged_warnings):
    """mmengine's BaseDataset retries with another index when the pipeline returns None."""
    from mmpretrain.datasets import CustomDataset
    for label in ('a', 'b'):
        (tmp_path / label).mkdir()
        save(Image.fromarray(rgb_image(seed=ord(label))), tmp_path / label / 'good.png')
    bad = tmp_path / 'a' / 'zz_truncated.jpg'
    bad.write_bytes(jpeg_bytes(rgb_image())[:300])
    init_default_scope('mmpretrain')
    dataset = CustomDataset(data_root=str(tmp_path), pipeline=[
        dict(type='cmt_mm.SafeLoadImageFromFile'), dict(type='PackInputs')])
    bad_index = [i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'] ==
                 str(bad)]
    assert len(bad_index) == 1
    sample = dataset[bad_index[0]]
    assert sample['data_samples'].img_path != str(bad)
    assert sample['inputs'].shape == (3, 40, 60)
    assert any(str(bad) in message for message in logged_warnings)


CLASSIFICATION_CONFIGS = {
    'cmt/cmt-ti_8xb128_in1k.py': 160,
    'cmt/cmt-s_8xb128_in1k.py': 224,
    'cmt_transfer/cmt-s_8xb64_flowers102.py': 224,
}
ODD_IMAGES = {  # name -> (size, mode)
    'tiny_gray.png': ((12, 20), 'L'),
    'wide_rgba.png': ((40, 2000), 'RGBA'),
    'tall_odd.jpg': ((301, 45), 'RGB'),
    'deep.png': ((33, 33), 'I;16'),
}


@pytest.fixture(scope='module')
def odd_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('odd_images')
    paths = {}
    for name, (size, mode) in ODD_IMAGES.items():
        rgb = rgb_image(*size)
        if mode == 'I;16':
            image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        else:
            image = Image.fromarray(rgb).convert(mode)
        paths[name] = save(image, folder / name)
    return paths


@pytest.mark.parametrize('name', list(CLASSIFICATION_CONFIGS))
@pytest.mark.parametrize('split', ['train', 'val'])
def test_classification_pipelines_give_the_model_size(name, split, odd_images):
    """Images of any mode and size, even under CMT's 32 px, come out at the crop size."""
    from mmengine.dataset import Compose
    cfg = Config.fromfile(REPO / 'configs' / name)
    init_default_scope('mmpretrain')
    pipeline = Compose(cfg[f'{split}_dataloader'].dataset.pipeline)
    size = CLASSIFICATION_CONFIGS[name]
    for image, path in odd_images.items():
        packed = pipeline(dict(img_path=path, gt_label=0))
        assert packed['inputs'].shape == (3, size, size), (image, packed['inputs'].shape)
        assert osp.basename(packed['data_samples'].img_path) == image
