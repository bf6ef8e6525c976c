# Source this (`. ros2_ws/setup.sh`, from the repository root or from ros2_ws) instead of colcon's
# install/setup.sh: it sources that one, then removes the empty entries that ament's library_path hook
# leaves in LD_LIBRARY_PATH when it was unset (a trailing ':' makes the dynamic loader search the current
# directory, so a library dropped there would be loaded).
# EDGEINFER_ROS_INSTALL overrides where the colcon install tree is.
for _edgeinfer_install in "${EDGEINFER_ROS_INSTALL:-}" .ros/install install ros2_ws/install ../.ros/install; do
    if [ -n "$_edgeinfer_install" ] && [ -f "$_edgeinfer_install/setup.sh" ]; then
        break
    fi
    _edgeinfer_install=""
done
if [ -z "$_edgeinfer_install" ]; then
    echo "ros2_ws/setup.sh: no colcon install tree found (.ros/install, install, ros2_ws/install); build it first" \
        "(make ros) or set EDGEINFER_ROS_INSTALL" >&2
else
    # colcon's setup.sh finds its own folder through COLCON_CURRENT_PREFIX
    COLCON_CURRENT_PREFIX=$(cd "$_edgeinfer_install" && pwd)
    . "$COLCON_CURRENT_PREFIX/setup.sh"
    for _edgeinfer_var in LD_LIBRARY_PATH PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH PATH; do
        eval "_edgeinfer_value=\${$_edgeinfer_var:-}"
        _edgeinfer_value=$(printf '%s' "$_edgeinfer_value" | sed -e 's/::*/:/g' -e 's/^://' -e 's/:$//')
        if [ -n "$_edgeinfer_value" ]; then
            eval "export $_edgeinfer_var=\$_edgeinfer_value"
        else
            unset "$_edgeinfer_var"
        fi
    done
    unset _edgeinfer_var _edgeinfer_value
fi
unset _edgeinfer_install
