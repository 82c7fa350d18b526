"""The mpnet encoder: all-mpnet-base-v2 run in numpy from its five pinned packages
(installed by scripts/setup.sh --dev), checked against reference vectors."""

import numpy as np
import pytest

from offramp.encoders import mpnet
from offramp.encoders.sentence import get_encoder

# the first 8 of the 768 values of two sentence vectors as computed by the reference
# implementation (transformers' MPNetModel with sentence-transformers' mean pooling and
# normalisation, fp32) from the same weights
REFERENCE = {
    "I still have not received my new card": [
        0.031314,
        0.028202,
        -0.01389,
        0.026234,
        -0.038206,
        -0.014689,
        -0.007362,
        0.022191,
    ],
    "How do I reset my PIN?": [-0.087979, -0.06701, 0.0197, -0.001779, -0.019331, -0.021689, -0.035632, -0.061021],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("cache")
    mp.setenv("OFFRAMP_CACHE_DIR", str(d))
    yield d
    mp.undo()


def test_vectors_match_the_reference(cache):
    assert mpnet.installed(), mpnet.INSTALL_HINT
    enc = mpnet.MpnetEncoder(cache=False)
    texts = list(REFERENCE) + ["my card has not arrived yet", "what is the exchange rate for euros"]
    V = enc.encode_uncached(texts)
    assert V.shape == (4, 768) and np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-5)
    for i, t in enumerate(REFERENCE):
        assert np.allclose(V[i, :8], REFERENCE[t], atol=2e-5), t
    # batching (padding) changes nothing; a paraphrase is near, an unrelated question far
    alone = enc.encode_uncached([texts[1]])[0]
    assert np.allclose(alone, V[1], atol=1e-5)
    assert V[0] @ V[2] > 0.7 > 0.2 > V[0] @ V[3]
    assert get_encoder("mpnet").encoder_id.startswith("all-mpnet-base-v2:78c0197b")


def test_a_changed_extracted_file_is_refused_and_extracted_again(cache):
    weights, tok = mpnet.model_files()
    with open(tok, "ab") as f:
        f.write(b" ")
    with pytest.raises(mpnet.MpnetUnavailable, match="does not match its pinned SHA-256"):
        mpnet.model_files()
    assert not tok.exists()  # removed: the next use extracts it again from the packages
    assert mpnet.model_files()[1].is_file()


def test_safetensors_reader_refuses_a_bad_header(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="no valid safetensors header"):
        mpnet.read_safetensors(bad)
