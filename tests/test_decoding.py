"""runner.engine.decoding: a VAE's decode changed for one pipeline call, then given back."""
import torch

from runner.engine.decoding import decoded_in_parts


class RecordingVae:
    def __init__(self):
        self.calls = []

    def decode(self, z, return_dict=True):
        self.calls.append((z.shape[0], return_dict))
        return {"sample": z * 2} if return_dict else (z * 2,)


def test_a_decode_of_the_whole_batch_is_made_part_by_part_and_the_decode_given_back():
    vae = RecordingVae()
    z = torch.arange(5.0).reshape(5, 1)
    with decoded_in_parts(vae, [2, 3]):
        out = vae.decode(z, return_dict=False)[0]
        assert vae.decode(z[:4], return_dict=False)[0].shape[0] == 4, "another batch: left whole"
        assert vae.decode(z)["sample"].shape[0] == 5, "return_dict=True, not the pipelines' call: left whole"
    assert torch.equal(out, z * 2)
    assert vae.calls == [(2, False), (3, False), (4, False), (5, True)]
    assert "decode" not in vae.__dict__, "the class's decode again, outside the block"


def test_one_part_or_none_leaves_the_decode_alone():
    vae = RecordingVae()
    for sizes in (None, [], [4]):
        with decoded_in_parts(vae, sizes):
            assert "decode" not in vae.__dict__
