from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.preprocess import PreprocessSpec, list_images, preprocess, read_image


def _reference(bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Straightforward float implementation of the spec, to check the optimised one against."""
    h, w = bgr.shape[:2]
    r = spec.resize / min(h, w)
    size = (spec.resize, int(h * r)) if w <= h else (int(w * r), spec.resize)
    img = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    top, left = round((img.shape[0] - spec.crop) / 2), round((img.shape[1] - spec.crop) / 2)
    img = img[top : top + spec.crop, left : left + spec.crop][:, :, ::-1].astype(np.float64)
    img = (img * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    return img.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.fixture()
def frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_imagenet_defaults(frame):
    spec = PreprocessSpec()
    assert (spec.resize, spec.crop, spec.interpolation, spec.channel_order) == (256, 224, "area", "RGB")
    out = preprocess(frame)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32
    # the fast box filter stays within a grey level of cv2.INTER_AREA on average, even on white noise
    grey_level = 1 / 255 / 0.225
    assert np.abs(out - _reference(frame, spec)).mean() < grey_level


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (1080, 1920), (500, 300), (300, 300)])
def test_geometry_matches_resize_then_centre_crop(shape):
    """Smooth images, so interpolation differences vanish and only geometry (scale, crop offset,
    orientation) can make a difference."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=2).astype(np.uint8)
    diff = np.abs(preprocess(img) - _reference(img, PreprocessSpec()))
    assert diff.mean() < 0.01 and diff.max() < 0.05


def test_arrays_are_bgr_by_default_and_rgb_on_request(frame):
    rgb = frame[:, :, ::-1].copy()
    np.testing.assert_array_equal(preprocess(frame), preprocess(rgb, input_order="RGB"))
    assert not np.array_equal(preprocess(frame), preprocess(rgb))


def test_path_equals_decoded_array(tmp_path, frame):
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), frame)
    np.testing.assert_array_equal(preprocess(str(path)), preprocess(frame))
    np.testing.assert_array_equal(preprocess(path), preprocess(frame))


def test_greyscale_rgba_16bit_float_and_single_channel(frame):
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    expected = preprocess(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    np.testing.assert_array_equal(preprocess(grey), expected)
    np.testing.assert_array_equal(preprocess(grey[:, :, None]), expected)
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(preprocess(bgra), preprocess(frame))
    deep = frame.astype(np.uint16) * 257
    np.testing.assert_array_equal(preprocess(deep), preprocess(frame))
    np.testing.assert_allclose(preprocess(frame.astype(np.float32) / 255.0), preprocess(frame), atol=1e-5)


def test_batches_list_and_nhwc(frame):
    batch = preprocess([frame, frame[:, ::-1]])
    assert batch.shape == (2, 3, 224, 224)
    stacked = preprocess(np.stack([frame, frame]))
    np.testing.assert_array_equal(stacked[0], stacked[1])


def test_portrait_and_small_images():
    tall = np.zeros((500, 300, 3), np.uint8)
    assert preprocess(tall).shape == (1, 3, 224, 224)
    tiny = np.zeros((20, 30, 3), np.uint8)
    assert preprocess(tiny).shape == (1, 3, 224, 224)


def test_spec_round_trips_through_json():
    spec = PreprocessSpec.caffe()
    again = PreprocessSpec.from_json(spec.to_json())
    assert again == spec
    assert again.channel_order == "BGR" and again.scale == 1.0 and again.crop == 227


@pytest.mark.parametrize("spec", [PreprocessSpec(), PreprocessSpec.caffe()], ids=["rgb", "bgr"])
@pytest.mark.parametrize("input_format", ["uint8-nhwc", "uint8-nhwc4"])
def test_pixel_input_is_the_crop_the_float_input_normalises(frame, spec, input_format):
    """uint8-nhwc(4): the same crop, in the network's channel order, that float32-nchw normalises
    (nhwc4 adds an opaque alpha channel)."""
    pixel_spec = dataclasses.replace(spec, input_format=input_format)
    channels = 4 if input_format.endswith("4") else 3
    assert pixel_spec.input_shape == (spec.crop, spec.crop, channels) and pixel_spec.dtype == np.uint8
    pixels = preprocess([frame, frame[::-1]], pixel_spec)
    assert pixels.shape == (2, spec.crop, spec.crop, channels) and pixels.dtype == np.uint8
    if channels == 4:
        assert (pixels[..., 3] == 255).all()
        pixels = pixels[..., :3]
    normalised = (pixels.astype(np.float64) * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(
        normalised.transpose(0, 3, 1, 2), preprocess([frame, frame[::-1]], spec), atol=1e-4
    )
    assert PreprocessSpec.from_json(pixel_spec.to_json()) == pixel_spec
    with pytest.raises(EdgeSqueezeError, match=r"input_format.*upgrade"):
        PreprocessSpec(input_format="float16-nchw")


def test_caffe_spec_subtracts_bgr_mean():
    img = np.full((256, 256, 3), (104, 117, 123), np.uint8)
    np.testing.assert_allclose(preprocess(img, PreprocessSpec.caffe()), 0.0, atol=1e-4)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(EdgeSqueezeError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    with pytest.raises(EdgeSqueezeError, match="cannot decode"):
        preprocess(str(junk))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(EdgeSqueezeError, match="cannot decode"):
        preprocess(str(empty))
    with pytest.raises(EdgeSqueezeError, match="shape"):
        preprocess(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(EdgeSqueezeError, match="dtype"):
        preprocess(np.zeros((10, 10, 3), np.int32))
    with pytest.raises(EdgeSqueezeError, match="channel_order"):
        PreprocessSpec(channel_order="RBG")


def test_list_images_is_recursive_case_insensitive_and_sorted(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/x.JPG", "a/y.png", "z.Jpeg", "notes.txt", "w.webp", "v.TIF"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.name for p in list_images(tmp_path)]
    assert names == sorted(names, key=lambda n: str(next(tmp_path.rglob(n))))
    assert set(names) == {"x.JPG", "y.png", "z.Jpeg", "w.webp", "v.TIF"}
