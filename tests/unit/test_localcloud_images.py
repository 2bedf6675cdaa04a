"""Old images are pruned, but never one a running container's overlay still reads."""
from localcloud import image


def _mountinfo(lower: str) -> str:
    # a line as the kernel writes it for an nspawn root (overlay with one lower layer)
    return (f"812 27 0:95 / /var/lib/bulletproof-mail-local/s-1/hosts/mail/root rw,relatime shared:411 "
            f"- overlay overlay rw,lowerdir={lower},upperdir=/var/lib/x/upper,workdir=/var/lib/x/work\n"
            "27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")


def test_old_images_go_and_the_current_and_in_use_ones_stay(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    images = image.images_dir()
    for name in ("debian12-v1-aaaaaaaa", "debian12-v1-bbbbbbbb", "debian12-v1-cccccccc"):
        (images / name / "etc").mkdir(parents=True)
    (images / ".lock").touch()
    keep, in_use = images / "debian12-v1-cccccccc", images / "debian12-v1-aaaaaaaa"

    removed = image.prune_images(keep, mountinfo=_mountinfo(str(in_use)))

    assert [p.name for p in removed] == ["debian12-v1-bbbbbbbb"]
    assert sorted(p.name for p in images.iterdir()) == [".lock", "debian12-v1-aaaaaaaa", "debian12-v1-cccccccc"]


def test_an_image_named_in_a_stacked_lowerdir_counts_as_used(tmp_path):
    from localcloud import mounts
    path = tmp_path / "debian12-v1-aaaaaaaa"
    path.mkdir()
    assert mounts.used_as_lower(path, _mountinfo(f"/other/layer:{path}"))
    assert not mounts.used_as_lower(path, _mountinfo("/other/layer"))
