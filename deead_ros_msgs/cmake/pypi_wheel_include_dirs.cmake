# ROS 2 wheels from PyPI export include dirs of their manylinux build host
# (/opt/python/cp311-cp311/...). Point them at this interpreter's Python and NumPy headers.
# Included after find_package(Python3 ...) and the rosidl packages, by deead_ros_msgs and by the tests'
# interface fixture (test/fixtures/autoware_planning_msgs), so both build with one recipe.
get_directory_property(_imported IMPORTED_TARGETS)
foreach(_t IN LISTS _imported)
  get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc AND "${_inc}" MATCHES "/opt/python/")
    list(TRANSFORM _inc REPLACE "^/opt/python/[^/]+/include/python[0-9.]+$" "${Python3_INCLUDE_DIRS}")
    list(TRANSFORM _inc REPLACE "^/opt/python/[^/]+/lib/python[0-9.]+/site-packages/numpy/_core/include$" "${Python3_NumPy_INCLUDE_DIRS}")
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
  endif()
endforeach()
